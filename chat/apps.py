from django.apps import AppConfig


class ChatConfig(AppConfig):
    name = "chat"
    verbose_name = "Chat"

    def ready(self) -> None:
        # Signal handlers publish session revocations to every server process.
        from chat import signals  # noqa: F401
