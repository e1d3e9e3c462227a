"""The embedded broker: kombu's ``filesystem://`` transport with whole-message writes.

kombu's own transport creates a message file under its final name and then writes it. A worker polling the
folder in between claims the empty file, fails to decode it and stops with an unrecoverable error (seen in
the fault tests: the gpu worker died on ``JSONDecodeError`` and the audit waited for ever). Here a message is
written in full under a name no queue reads and renamed into place, so a reader sees a whole
message or none. A message that still cannot be decoded (a file some other writer left) is dropped with an error in
the log instead of stopping the worker; the reaper sends lost work again. Selected with the ``broker_transport``
setting (``workers.celery_app``)."""
from __future__ import annotations

import logging
import os
import uuid
from time import monotonic_ns
from typing import Any

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps

log = logging.getLogger(__name__)

STAGING_PREFIX = ".staging-"  # never matches ``<stamp>_<uuid>.<queue>.msg``, so no queue reads it


def message_filename(queue: str) -> str:
    """The name of a message of ``queue``: readers take files in sorted order, so the stamp leads, zero-padded
    nanoseconds of the monotonic clock (kombu's milliseconds tie within a burst and then sort by uuid)."""
    return f"{monotonic_ns():020d}_{uuid.uuid4()}.{queue}.msg"


class Channel(filesystem.Channel):
    def _put(self, queue: str, payload: Any, **kwargs: Any) -> None:
        """Put ``payload`` on ``queue``: written whole under a staging name, then renamed into place."""
        folder = self.data_folder_out
        final = os.path.join(folder, message_filename(queue))
        staging = os.path.join(folder, f"{STAGING_PREFIX}{uuid.uuid4()}")
        try:
            with open(staging, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(staging, final)
        except OSError as exc:
            try:
                os.unlink(staging)
            except OSError:
                pass
            raise ChannelError(f"Cannot add file {final!r} to directory") from exc

    def _get(self, queue: str) -> Any:
        """The oldest message of ``queue``; one that does not decode is taken off the queue and skipped."""
        while True:
            try:
                return super()._get(queue)
            except ValueError as exc:  # JSONDecodeError: kombu has already taken the file off the queue
                log.error("dropped a message of queue %s that does not decode (%s); the reaper re-sends lost work",
                          queue, exc)


class Transport(filesystem.Transport):
    Channel = Channel
