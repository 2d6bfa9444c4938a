from django.apps import AppConfig


class SharedConfig(AppConfig):
    name = "shared"
    label = "shared"
    verbose_name = "Corbi integrations"
    default_auto_field = "django.db.models.BigAutoField"
