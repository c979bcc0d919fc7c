"""The intake service: configuration, flow engine, crypto, WhatsApp client, exports, CLI."""
