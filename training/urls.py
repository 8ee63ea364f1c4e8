from django.urls import path

from training import views

app_name = "training"

urlpatterns = [
    path("datasets/", views.dataset_list_view, name="dataset_list"),
    path("datasets/upload/", views.dataset_upload_view, name="dataset_upload"),
    path("datasets/<int:pk>/", views.dataset_detail_view, name="dataset_detail"),
    path("jobs/", views.job_list_view, name="job_list"),
    path("jobs/new/", views.job_create_view, name="job_create"),
    path("jobs/<int:pk>/", views.job_detail_view, name="job_detail"),
    path("jobs/<int:pk>/cancel/", views.job_cancel_view, name="job_cancel"),
    path("jobs/<int:pk>/retry/", views.job_retry_view, name="job_retry"),
    path("lineage/<int:pk>/", views.backbone_lineage_view, name="lineage"),
    path("forgetting-reports/<int:pk>/", views.report_detail_view, name="report_detail"),
    path("forgetting-reports/<int:pk>/accept/", views.report_decide_view, {"accept": True}, name="report_accept"),
    path("forgetting-reports/<int:pk>/reject/", views.report_decide_view, {"accept": False}, name="report_reject"),
]
