"""The file MLflow logs as the model's code (models-from-code) and runs to load it."""

from mlflow.models import set_model

from trackvision.serving import PhotoClassifier

set_model(PhotoClassifier())
