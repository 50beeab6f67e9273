"""The idle bench app behind a realistic import weight (a worker's usual stdlib modules), so
that `preload: true` (imported once in the supervisor, shared copy-on-write) and
`preload: false` (imported again in every node) differ the way they do for a real app."""

from __future__ import annotations

import asyncio  # noqa: F401
import concurrent.futures  # noqa: F401
import decimal  # noqa: F401
import email.mime.multipart  # noqa: F401
import http.client  # noqa: F401
import json  # noqa: F401
import logging.handlers  # noqa: F401
import sqlite3  # noqa: F401
import ssl  # noqa: F401
import urllib.request  # noqa: F401
import uuid  # noqa: F401
import xml.etree.ElementTree  # noqa: F401
import zipfile  # noqa: F401

from swarmd_benchapp import idle

__all__ = ["idle"]
