# Locust's side of benches/sse-load/run: one idle SSE stream per user,
# read line by line as it arrives (FastHttpUser, geventhttpclient: the
# cheaper of Locust's two clients, and its built-in iter_lines for
# streaming responses). It only counts the events (`id:` lines), less work
# per event than sse-load does (which keeps every id's arrival times), so
# the comparison is generous to Locust.
#
#   locust -f benches/sse-load/locustfile.py --headless -H http://127.0.0.1:3000 \
#     --users 10000 --spawn-rate 1000 --run-time 60s
from locust import FastHttpUser, events, task

received = 0


class Stream(FastHttpUser):
    # The stream is idle between ticks: no timeout while it is held.
    network_timeout = 3600.0
    connection_timeout = 60.0

    @task
    def hold(self):
        global received
        for line in self.client.iter_lines("/sse", headers={"Accept": "text/event-stream"}):
            if line.startswith("id:"):
                received += 1


@events.quitting.add_listener
def said(environment, **_kwargs):
    print(f"events received: {received}")
