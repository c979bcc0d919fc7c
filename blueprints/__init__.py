"""Flask blueprints: thin HTTP adapters that call one service function each."""
