# casavi-sync as a container: the wheel, nothing else from the checkout, running `serve` as a
# non-root user with the state (and its secret key, reports) on a volume.
# NOT BUILT OR RUN HERE: the machine this was written on has no container runtime. What was
# tested is the same sequence without Docker: build the wheel, install it into a fresh venv and
# run demo/validate/test/schema --path/init from an unrelated folder (tests/test_wheel.py).
# See docs/install.md.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY engine ./engine
RUN pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11-slim
RUN useradd --system --home-dir /var/lib/casavi-sync --create-home casavi-sync
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir /wheels/*.whl && rm -rf /wheels
USER casavi-sync
ENV CASAVI_SYNC_STATE=/var/lib/casavi-sync/state.db \
    PYTHONUNBUFFERED=1
VOLUME ["/var/lib/casavi-sync"]
# serve stops cleanly on SIGTERM (docker stop); give it time to finish the write in flight:
#   docker stop --time 120 ...
STOPSIGNAL SIGTERM
ENTRYPOINT ["casavi-sync"]
CMD ["serve", "--log-format", "json"]
