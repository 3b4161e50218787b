# The grader image: API, worker and migrations all run from it (see docker-compose.yml).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    GRADER_DATA_DIR=/data

WORKDIR /app

# The CPU wheel from PyTorch's own index: the default PyPI torch pulls a multi-GB CUDA build.
# (A GPU image would install the matching CUDA wheel here instead.)
RUN pip install --index-url https://download.pytorch.org/whl/cpu "torch>=2.2,<2.14"

COPY pyproject.toml README.md alembic.ini ./
COPY grader ./grader
COPY worker ./worker
COPY migrations ./migrations
# Editable install keeps migrations/ next to the package, where `grader migrate` finds it.
RUN pip install -e .

RUN groupadd --system grader && useradd --system --gid grader --home-dir /data grader \
    && mkdir -p /data && chown grader:grader /data
USER grader

EXPOSE 8000
CMD ["grader", "serve", "--no-worker", "--host", "0.0.0.0"]
