"""The test stack's settings: the project, bucket, KMS key and WhatsApp account the session's
emulators and fakes are started with, and the `config` fixture points the app at."""

from __future__ import annotations

PROJECT_ID = "intake-test"
BUCKET = "intake-test-archive"
KMS_KEY_NAME = f"projects/{PROJECT_ID}/locations/global/keyRings/intake/cryptoKeys/keyset-kek"
GRAPH_TOKEN = "test-graph-access-token"
PHONE_NUMBER_ID = "100000000000001"
START_TEMPLATE = "intake_start"
REENGAGE_TEMPLATE = "intake_reengage"
REMINDER_TEMPLATE = "intake_reminder"  # approved, as a clinic must have it (see README)
# WHATSAPP_APP_SECRET: signs the webhook posts the tests send as Meta.
APP_SECRET = "dev-app-secret"
