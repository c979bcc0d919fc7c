"""The conversation with a patient: the pure flow engine (`flow`), handling each webhook
message, sending queued replies, invitations and the support view."""
