"""Where each middleware sits: ``lumen_middleware`` returns (slot, middleware) pairs.

Request methods run in ascending slot order and response methods in reverse (falcon's rule), so
a lower slot sees the request first and the response last. Middleware of one slot keep the
order pluggy calls their plugins in.
"""

OUTERMOST = 100  # metrics: its timing includes every other middleware
COMPRESSION = 150  # encodes the body last, once every other middleware is done with it
SECURITY_HEADERS = 200
CORS = 300  # answers preflights before the rate limit, the session and authentication
CONDITIONAL = 350  # ETags and 304s of JSON: inside CORS, so a 304 keeps its CORS headers
RATE_LIMIT = 400  # before the session: for limits that need neither the route nor the caller
MAINTENANCE = 450  # the core: writes refused in maintenance mode, before any session opens
SESSION = 500  # the core: the request's database session, committed or rolled back
AUTHENTICATION = 600  # the core: the bearer token, resolved after routing
# The core: the cached read a GET will make, announced before the first Redis round trip.
PREFETCH = 650
# After authentication, in process_resource: the route and the caller are known (rate limits).
AFTER_AUTHENTICATION = 700
INNERMOST = 900
