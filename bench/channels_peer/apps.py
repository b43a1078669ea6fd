from django.apps import AppConfig


class ChannelsPeerConfig(AppConfig):
    name = "bench.channels_peer"
    label = "channels_peer"
    default_auto_field = "django.db.models.BigAutoField"
