"""Training: the one loop every method and task runs on (loop.py: train, fit, train_step, finish), its setup
(setup.py) and step schedule (schedule.py), and what a run needs around it: the run folder (run_dir.py) and
its files (run_files.py), checkpoints without pickle (checkpoint.py), torchrun data parallelism
(distributed.py), stopping on signals (stopping.py), the metrics log and TensorBoard (run_log.py), speed
options (speed.py, swiglu.py), the model kinds' feed/loss/predict table (kinds.py), loading a finished run's
model (run_model.py) and exporting it (export.py). May import every layer below it (errors, files, hub,
config, lora, models, data, evaluation, tasks, methods); nothing from reporting or cli.
"""
