from django.urls import path

from backbones import views

app_name = "backbones"

urlpatterns = [
    path("", views.backbone_list_view, name="list"),
    path("upload/", views.backbone_upload_view, name="upload"),
    path("<int:pk>/", views.backbone_detail_view, name="detail"),
]
