"""``trackvision tune``: an Optuna study whose trials are ordinary DVC experiments.

Optuna chooses each trial's params and keeps the study in a database; DVC runs the trial
(``dvc exp run --temp``) and keeps its outputs; MLflow holds its runs, tagged with the study and
the trial. The training loop only sees a ``Pruner`` (``trial.py``).
"""
