from django.urls import path

from chat import api, views

app_name = "chat"
urlpatterns = [
    path("", views.room_list, name="room_list"),
    path("rooms/<slug:slug>/", views.room_detail, name="room_detail"),
    path("rooms/<slug:slug>/members/", views.room_members, name="room_members"),
    path("api/rooms/", api.room_list, name="api_room_list"),
    # <str:slug>: any slug reaches the view, so a malformed one gets the API's JSON 404.
    path("api/rooms/<str:slug>/messages", api.message_list, name="api_message_list"),
    # Everything else under /api/ answers in JSON too, never with an HTML page.
    path("api/<path:rest>", api.not_found),
]
