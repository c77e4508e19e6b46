"""Hyperparameter sweeps on Optuna: each trial an ordinary run directory under the sweep
directory, the study in an SQLite file there (or any database, for workers on many machines).

space.py and sweep_file.py parse what to search; study.py keeps the study and hands out trials;
trial.py runs one; workers.py runs them; results.py writes the table, best.yaml and plots;
runner.py is what `mltrain sweep` calls. Optuna is imported only by the modules that need it,
after runner.py has checked it is installed."""
