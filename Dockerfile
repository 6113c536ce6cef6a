# The driftline image: one image for every role (worker, notifier, db migrations, replay).
# Build: docker build -t driftline .   Run: docker run --rm driftline worker --help
FROM python:3.11-slim AS build
WORKDIR /src
COPY . .
# wheels of driftline and every dependency (PostgreSQL driver included), built once, at the
# versions constraints.txt pins: the image runs exactly what the test suite ran
RUN pip wheel --no-cache-dir --wheel-dir /wheels -c constraints.txt ".[postgresql]"

FROM python:3.11-slim
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1
RUN useradd --system --uid 10001 --create-home --home-dir /app driftline
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels "driftline[postgresql]" && rm -rf /wheels
COPY --chmod=0755 deploy/docker/entrypoint.sh /usr/local/bin/driftline-entrypoint
USER driftline
WORKDIR /app
EXPOSE 9108
ENTRYPOINT ["driftline-entrypoint"]
CMD ["--help"]
