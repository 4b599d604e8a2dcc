#!/usr/bin/env python3
"""Reference side of the gateway's Flask-JWT-Extended interop tests (tests/flask_interop.rs).

Uses the real Flask-JWT-Extended (pinned in requirements.txt) configured like the seed API:

    app.config["JWT_SECRET_KEY"] = <secret>

The secret comes from --secret or the JWT_SECRET_KEY environment variable. --issuer and
--audience set JWT_ENCODE_/JWT_DECODE_ISSUER and JWT_ENCODE_/JWT_DECODE_AUDIENCE.

Commands:
    mint <identity>          print create_access_token(identity=<identity>)
    verify <token>           GET a @jwt_required() route through Flask's test client with
                             "Authorization: Bearer <token>"; print {"status", "body"} as JSON
    verify-header <value>    the same with a raw Authorization header value
    verify-batch <json>      a JSON array of raw Authorization values (null: no header);
                             print a JSON array of {"status", "body"}

The route returns {"identity": get_jwt_identity()}. Exit status 0 whenever the command
ran: a refused token is a result, not an error.
"""

import argparse
import json
import os
import sys

from flask import Flask, jsonify
from flask_jwt_extended import (
    JWTManager,
    create_access_token,
    get_jwt_identity,
    jwt_required,
)


def make_app(secret, issuer=None, audience=None):
    app = Flask(__name__)
    app.config["JWT_SECRET_KEY"] = secret
    if issuer is not None:
        app.config["JWT_ENCODE_ISSUER"] = issuer
        app.config["JWT_DECODE_ISSUER"] = issuer
    if audience is not None:
        app.config["JWT_ENCODE_AUDIENCE"] = audience
        app.config["JWT_DECODE_AUDIENCE"] = audience
    JWTManager(app)

    @app.route("/properties", methods=["GET"])
    @jwt_required()
    def properties():
        return jsonify(identity=get_jwt_identity()), 200

    return app


def verify(app, authorization):
    headers = {} if authorization is None else {"Authorization": authorization}
    response = app.test_client().get("/properties", headers=headers)
    return {"status": response.status_code, "body": response.get_json(silent=True)}


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--secret", default=os.environ.get("JWT_SECRET_KEY"))
    parser.add_argument("--issuer")
    parser.add_argument("--audience")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("mint").add_argument("identity")
    sub.add_parser("verify").add_argument("token")
    sub.add_parser("verify-header").add_argument("value")
    sub.add_parser("verify-batch").add_argument("values_json")
    args = parser.parse_args()
    if not args.secret:
        parser.error("set --secret or JWT_SECRET_KEY")

    app = make_app(args.secret, args.issuer, args.audience)
    if args.command == "mint":
        with app.app_context():
            print(create_access_token(identity=args.identity))
    elif args.command == "verify":
        print(json.dumps(verify(app, f"Bearer {args.token}")))
    elif args.command == "verify-header":
        print(json.dumps(verify(app, args.value)))
    else:
        values = json.loads(args.values_json)
        print(json.dumps([verify(app, v) for v in values]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
