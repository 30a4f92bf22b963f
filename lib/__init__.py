"""Library behind main.ipynb and scripts/: data, models glue, training, evaluation."""
