from django.urls import path

from assemblies import views

app_name = "assemblies"

urlpatterns = [
    path("", views.assembly_list_view, name="list"),
    path("new/", views.assembly_builder_view, name="new"),
    path("<int:pk>/", views.assembly_detail_view, name="detail"),
    path("<int:pk>/try/", views.assembly_try_view, name="try"),
    path("<int:pk>/exports/", views.assembly_export_view, name="export"),
    path("<int:pk>/try/<int:pid>/", views.assembly_trial_view, name="trial"),
]
