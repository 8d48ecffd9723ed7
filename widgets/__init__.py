"""tickdeck's widgets: each keeps its state in typed reactives and draws it with a pure function that
is tested on its own. Widgets receive state from the app (attributes down) and never talk to the engine;
engine types are imported for type checking only, so importing a widget never loads numpy or numba."""
