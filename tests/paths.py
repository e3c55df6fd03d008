"""The tests' own configuration: `tests/dialplans/` is the demo configuration the tests are written against
(agents and queues with their timers, flows, numbers, customers, hours, channels, phones), kept with the tests
so that an edit of `dialplans/` (what admins edit) never changes what a test means or makes it fail. The stack
tests' server runs on it. The few tests of the shipped files themselves (that they load, validate and agree)
read SHIPPED_DIALPLANS and say so."""

from hilo.settings import REPO_ROOT

DIALPLANS = REPO_ROOT / "tests" / "dialplans"
SHIPPED_DIALPLANS = REPO_ROOT / "dialplans"
