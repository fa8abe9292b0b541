"""Celery bound to the Flask app: every task runs inside the app context. Knows no feature: the app
factory imports the features' task modules (`shop.register_tasks`)."""

from __future__ import annotations

from typing import Any

from celery import Celery, Task
from celery.signals import worker_process_init
from flask import Flask, current_app

from shop.extensions import db


def celery_init_app(app: Flask) -> Celery:
    class FlaskTask(Task):
        def __call__(self, *args: Any, **kwargs: Any) -> Any:
            with app.app_context():
                return self.run(*args, **kwargs)

    celery_app = Celery(app.name, task_cls=FlaskTask)
    celery_app.config_from_object(app.config["CELERY"])
    celery_app.set_default()
    app.extensions["celery"] = celery_app

    @worker_process_init.connect(weak=False)
    def _fresh_pool_after_fork(**kwargs: Any) -> None:
        # A forked worker must not share the parent's database connections.
        with app.app_context():
            db.engine.dispose(close=False)

    return celery_app


def task(name: str) -> Task:
    """A task of the current Flask app's own Celery app, so each app publishes to its own broker."""
    return current_app.extensions["celery"].tasks[name]
