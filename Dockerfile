# The one image recipe of the Python services. Build context: the repository root (the image
# needs the workspace lock file and libs/); the build argument SERVICE names the workspace package:
#   docker build --build-arg SERVICE=mailstore-api .      (or smtp-in, pop3d, smtp-submit, smtp-out; docker-compose.yml does this)
# Stage 1 resolves that package's locked dependencies into a virtual environment; stage 2 holds only
# that environment on a clean slim base (no compiler, no build tools, no uv) and runs as a non-root
# user. Each service's health check and ports are in docker-compose.yml, beside the variables that
# set the ports it listens on.
FROM python:3.11-slim AS build
ARG SERVICE
ENV UV_COMPILE_BYTECODE=1 UV_LINK_MODE=copy UV_PYTHON_DOWNLOADS=never PIP_DISABLE_PIP_VERSION_CHECK=1
RUN pip install --no-cache-dir uv==0.13.9
WORKDIR /app
COPY pyproject.toml uv.lock ./
COPY libs ./libs
COPY services ./services
COPY tools ./tools
# The package's console script (named as the package) becomes the image's command.
RUN if [ -z "$SERVICE" ]; then echo "build with --build-arg SERVICE=mailstore-api|smtp-in|pop3d|smtp-submit|smtp-out" >&2; exit 1; fi \
    && uv sync --frozen --no-dev --no-editable --package "$SERVICE" \
    && ln -s "$SERVICE" /app/.venv/bin/maildrop-service

FROM python:3.11-slim
RUN useradd --system --uid 10001 --user-group --home-dir /nonexistent --shell /usr/sbin/nologin maildrop \
    && mkdir -p /data /secrets \
    && chown maildrop:maildrop /data /secrets
COPY --from=build /app/.venv /app/.venv
ENV PATH=/app/.venv/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
CMD ["maildrop-service"]
