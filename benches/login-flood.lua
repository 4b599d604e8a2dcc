-- wrk script: wrong-password logins, for the login-flood phase of benches/load.sh.
wrk.method = "POST"
wrk.body = '{"email": "bench@example.com", "password": "wrong password"}'
wrk.headers["Content-Type"] = "application/json"
