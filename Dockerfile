# ModelHub web + worker image (used by docker-compose.yml).
FROM python:3.12-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 TF_CPP_MIN_LOG_LEVEL=2 \
    MODELHUB_HOME=/var/lib/modelhub
WORKDIR /app

COPY requirements.txt requirements-keras-hub.txt ./
RUN pip install --no-cache-dir -r requirements.txt \
 && pip install --no-cache-dir --no-deps -r requirements-keras-hub.txt

COPY . .
RUN useradd --system --home /var/lib/modelhub modelhub \
    && mkdir -p /var/lib/modelhub && chown modelhub /var/lib/modelhub \
    && SECRET_KEY=build-only-key-build-only-key-build-only-key-build-only DEBUG=1 \
       python manage.py collectstatic --no-input -v0
USER modelhub
EXPOSE 8000
# --limit-request-line: gunicorn's largest (8190 bytes; default 4094), so that long filter queries
# fit; longer request lines get 414 (documented in the API description and README).
CMD ["gunicorn", "modelhub.wsgi", "--bind", "0.0.0.0:8000", "--workers", "3", "--timeout", "600", "--limit-request-line", "8190"]
