from django.urls import path

from chat import views

# The JSON API under /api/ is the FastAPI app's (wsapp/api/), dispatched by project/asgi.py.
app_name = "chat"
urlpatterns = [
    path("", views.room_list, name="room_list"),
    path("rooms/<slug:slug>/", views.room_detail, name="room_detail"),
    path("rooms/<slug:slug>/members/", views.room_members, name="room_members"),
]
