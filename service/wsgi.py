"""The WSGI entry point for gunicorn: `gunicorn service.wsgi:app`."""

from service.shell.app import create_app

app = create_app()
