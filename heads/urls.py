from django.urls import path

from heads import views

app_name = "heads"

urlpatterns = [
    path("heads/", views.head_list_view, name="list"),
    path("heads/upload/", views.head_upload_view, name="upload"),
    path("heads/import/", views.import_create_view, name="import"),
    path("heads/imports/<int:pk>/", views.import_detail_view, name="import_detail"),
    path("heads/compare/", views.head_compare_view, name="compare"),
    path("heads/tasks/<str:slug>/metrics/", views.task_metrics_view, name="task_metrics"),
    path("heads/<int:pk>/", views.head_detail_view, name="detail"),
    path("heads/<int:pk>/transition/", views.head_transition_view, name="transition"),
    path("heads/<int:pk>/comment/", views.head_comment_view, name="comment"),
    path("review/", views.review_queue_view, name="review_queue"),
]
