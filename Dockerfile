FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
WORKDIR /app
COPY pyproject.toml README.md ./
COPY corbi corbi
COPY api api
COPY shared shared
COPY workers workers
COPY sandbox sandbox
COPY manage.py gunicorn.conf.py ./
# EXTRAS="[sandbox]" adds the provider simulator's libraries (the compose `sandbox` service).
ARG EXTRAS=""
RUN pip install --no-cache-dir ".${EXTRAS}"
RUN useradd --create-home corbi
USER corbi
EXPOSE 8000
CMD ["gunicorn", "corbi.wsgi", "--bind", "0.0.0.0:8000"]
