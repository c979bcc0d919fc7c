# One container for Cloud Run: slim Python 3.11, dependencies in their own layer, non-root.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    APP_ENV=production \
    PORT=8080 \
    WEB_CONCURRENCY=2 \
    GUNICORN_THREADS=8

WORKDIR /app

# Dependencies change less often than code: keep them in their own cached layer.
COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

RUN groupadd --system app && useradd --system --gid app --no-create-home app
COPY --chown=root:root service/ service/
COPY --chown=root:root blueprints/ blueprints/
COPY --chown=root:root repositories/ repositories/
COPY --chown=root:root migrations/ migrations/
COPY --chown=root:root docs/openapi.yaml docs/openapi.yaml
USER app

EXPOSE 8080
# Settings in service/shell/gunicorn_conf.py (PORT, WEB_CONCURRENCY, GUNICORN_THREADS; Cloud Run
# sends SIGTERM and waits 10 s: gunicorn's graceful timeout and the sender's drain fit below it).
CMD exec gunicorn -c python:service.shell.gunicorn_conf service.wsgi:app
