async def test_register_then_read_current_user(client):
    body = {"user": {"username": "smoke", "email": "Smoke@Example.com", "password": "password1"}}
    created = await client.post("/users", json=body)
    assert created.status_code == 201, created.text
    token = created.json()["user"]["token"]
    me = await client.get("/user", headers={"Authorization": f"Token {token}"})
    assert me.status_code == 200
    assert me.json()["user"]["email"] == "smoke@example.com"
