from django.apps import AppConfig


class TrainingConfig(AppConfig):
    name = "training"
    label = "training"
    verbose_name = "Datasets and training jobs"

    def ready(self) -> None:
        # Apps beside training (assemblies' exports) read datasets through core (core.datasets).
        from core.datasets import dataset_reader_register
        from training.dataset_reader import READER

        dataset_reader_register(READER)
