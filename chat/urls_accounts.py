from django.contrib.auth import views as auth_views
from django.urls import path

from chat import accounts, views

urlpatterns = [
    # Throttled; a POST logs in as the account whose password was given, even when logged in.
    path("login/", accounts.LoginView.as_view(), name="login"),
    # Django's LogoutView accepts POST only: a link or an <img> cannot log anyone out.
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    # Counted per address (KAIWA_SIGNUP_PER_ADDRESS per KAIWA_SIGNUP_WINDOW_SECONDS).
    path("signup/", accounts.signup_throttled(views.signup), name="signup"),
]
