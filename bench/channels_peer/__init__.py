"""The Django Channels reference server the bench compares Kaiwa with.

Django Channels 4 with ``channels_redis``' ``RedisChannelLayer``,
``AuthMiddlewareStack`` + ``AllowedHostsOriginValidator``, and a consumer that
saves each message with ``database_sync_to_async`` before ``group_send`` --
the way the Channels tutorial and most Channels chat apps do it. It speaks
Kaiwa's join/send/ack/message frames so one load generator drives both.

What it guarantees (and what it does not), so the numbers read right:

* ``seq`` is a per-room counter held in the process (one uvicorn process, as
  the bench runs it), taken when ``send`` arrives. Delivery order across
  concurrent senders is whatever ``channels_redis`` produces: the load
  generator counts out-of-order arrivals separately from losses.
* ``ack`` is sent after the row is saved and ``group_send`` returned. A group
  member whose channel already holds ``capacity`` (100) undelivered messages
  silently misses the message: that is channels_redis' documented behaviour.
* No resume: ``join`` ignores ``since``.

Its own settings (``bench.channels_peer.settings``) never import Kaiwa's.
"""
