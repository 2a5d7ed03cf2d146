# The session server image: the same package the quick start installs, served on all interfaces
# inside the container (the compose file runs it on the host's network, for media's UDP ports).
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
USER nobody
ENV SESSION_SERVER_DATA_DIR=/data
ENTRYPOINT ["session-server"]
CMD ["serve"]
