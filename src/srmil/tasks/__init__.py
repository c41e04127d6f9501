"""Tasks: classification, survival, regression. A task is a head size, a loss, a way to turn
outputs into predictions, metrics and a model-selection key, chosen by config; every registered
model keeps one architecture and gets the task's output size (see :mod:`srmil.tasks.base`)."""

from srmil.tasks.base import TASK_LOSSES, TASKS, Task, infer_task, make_task, task_of_state
from srmil.tasks.classification import ClassificationTask, classification_loss
from srmil.tasks.regression import RegressionTask
from srmil.tasks.survival import SurvivalTask

__all__ = [
    "TASKS", "TASK_LOSSES", "ClassificationTask", "RegressionTask", "SurvivalTask", "Task",
    "classification_loss", "infer_task", "make_task", "task_of_state",
]
