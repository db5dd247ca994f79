"""The supervisors' dashboard: live calls, call views with live transcripts and controls, call history.

Server-rendered pages (agent/dashboard/pages.py) and a little JS (static/dashboard.js), behind a login
with signed session cookies and CSRF tokens (agent/dashboard/auth.py).
"""
