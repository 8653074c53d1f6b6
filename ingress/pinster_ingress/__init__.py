"""The upload service: authenticated intake that stores an image and creates its ImageUpload."""

from pinster_ingress._app import Service, create_app
from pinster_ingress._auth import Claims, TokenVerifier
from pinster_ingress._errors import EXAMPLE_BODY, HttpError
from pinster_ingress._kube import ImageUploads, KubeImageUploads
from pinster_ingress._metrics import Metrics
from pinster_ingress._settings import AuthSettings, IngressSettings

__all__ = [
    "EXAMPLE_BODY",
    "AuthSettings",
    "Claims",
    "HttpError",
    "ImageUploads",
    "IngressSettings",
    "KubeImageUploads",
    "Metrics",
    "Service",
    "TokenVerifier",
    "create_app",
]
