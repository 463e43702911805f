"""Edge shapes: what users hand to omoi-ray and what they get back, validated at the boundary.

Modules:
- ``tasks``: task specs and the views returned for them (pydantic).
- ``locks``: lock requests as users write them (``parse_request``).
- ``events``: the event record, its position and its wire form.
- ``messages``: thread and message checks and the views returned for them (pydantic).

Rules:
- Input is checked here, before anything is sent or stored; a bad value raises the typed error
  of ``omoi_ray.errors`` naming the field.
- Specs may import the core (for its types and bounds), never the store, actors or client.
"""
