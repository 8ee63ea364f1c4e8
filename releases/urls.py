from django.urls import path

from releases import views

app_name = "releases"

urlpatterns = [
    path("heads/<int:pk>/alias/", views.alias_move_view, name="alias_move"),
    path("heads/tasks/<str:slug>/aliases/", views.task_aliases_view, name="task_aliases"),
    path("aliases/<int:pk>/delete/", views.alias_delete_view, name="alias_delete"),
    path("webhooks/", views.webhooks_view, name="webhooks"),
    path("webhooks/<int:pk>/", views.webhook_detail_view, name="webhook_detail"),
]
