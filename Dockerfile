# The session server image: the same package the quick start installs. The compose file runs it on the
# host's network (for media's UDP ports) behind the TLS proxy.
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY session_server ./session_server
COPY signaling ./signaling
COPY media ./media
COPY files ./files
COPY ledger ./ledger
# The versions the test suite passed with (requirements/test.lock), not whatever is newest today.
RUN pip install --no-cache-dir -c requirements/test.lock .
# The data directory (embedded Redis, encrypted documents, generated secrets) belongs to the user the
# server runs as. A named volume mounted here starts as a copy of it, owner and mode included; a bind
# mount keeps its own: give it to uid 65534 (`chown 65534:65534`) or the server stops at start, saying so.
RUN mkdir -p /data && chown nobody:nogroup /data && chmod 0700 /data
VOLUME ["/data"]
USER nobody:nogroup
ENV SESSION_SERVER_DATA_DIR=/data
ENTRYPOINT ["session-server"]
CMD ["serve"]
