package main

import (
	"crypto/sha256"
	"encoding/json"
	"errors"
	"net/http"
	"strings"
	"testing"
)

func TestPresentedKey(t *testing.T) {
	cases := []struct {
		name   string
		header http.Header
		want   string
	}{
		{"bearer", http.Header{"Authorization": {"Bearer rk-1"}}, "rk-1"},
		{"scheme is case-insensitive", http.Header{"Authorization": {"bearer   rk-1 "}}, "rk-1"},
		{"x-api-key", http.Header{"X-Api-Key": {"rk-2"}}, "rk-2"},
		{"bearer wins", http.Header{"Authorization": {"Bearer rk-1"}, "X-Api-Key": {"rk-2"}}, "rk-1"},
		{"other scheme falls back", http.Header{"Authorization": {"Basic cms6"}, "X-Api-Key": {"rk-2"}}, "rk-2"},
		{"empty bearer", http.Header{"Authorization": {"Bearer "}}, ""},
		{"none", http.Header{}, ""},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if got := presentedKey(c.header); got != c.want {
				t.Fatalf("presentedKey = %q, want %q", got, c.want)
			}
		})
	}
}

func TestKeyring(t *testing.T) {
	kr, err := newKeyring([]APIKeyConfig{
		{Key: keyAlice, UserID: "alice", Group: "default", Concurrency: 3},
		{Key: keyBob, UserID: "bob", Group: "team"},
	})
	if err != nil {
		t.Fatal(err)
	}
	req := func(h, v string) *http.Request {
		r, _ := http.NewRequest(http.MethodPost, "/v1/responses", nil)
		if h != "" {
			r.Header.Set(h, v)
		}
		return r
	}
	a, err := kr.authenticate(req("Authorization", "Bearer "+keyAlice))
	if err != nil {
		t.Fatal(err)
	}
	if a.UserID != "alice" || a.GroupID != "default" || a.Concurrency != 3 {
		t.Fatalf("alice = %+v", a)
	}
	b, err := kr.authenticate(req("X-Api-Key", keyBob))
	if err != nil {
		t.Fatal(err)
	}
	if b.UserID != "bob" || b.GroupID != "team" || b.Concurrency != 0 {
		t.Fatalf("bob = %+v", b)
	}
	if a.APIKeyID == b.APIKeyID || a.APIKeyID != keyID(sha256.Sum256([]byte(keyAlice))) {
		t.Fatalf("key ids %q, %q", a.APIKeyID, b.APIKeyID)
	}
	if strings.Contains(keyAlice, strings.TrimPrefix(a.APIKeyID, "key-")) {
		t.Fatalf("key id %q is part of the key", a.APIKeyID)
	}
	// Each call gets its own Subject: a handler changing it cannot affect
	// the next request.
	a.UserID = "mallory"
	if again, _ := kr.authenticate(req("Authorization", "Bearer "+keyAlice)); again.UserID != "alice" {
		t.Fatal("subject shared between requests")
	}

	if _, err := kr.authenticate(req("Authorization", "Bearer "+keyAlice+"x")); !errors.Is(err, errUnknownKey) {
		t.Fatalf("wrong key: %v", err)
	}
	if _, err := kr.authenticate(req("Authorization", "Bearer "+keyAlice[:len(keyAlice)-1])); !errors.Is(err, errUnknownKey) {
		t.Fatalf("key prefix: %v", err)
	}
	if _, err := kr.authenticate(req("", "")); !errors.Is(err, errNoKey) {
		t.Fatalf("no key: %v", err)
	}
}

// Both header forms work over HTTP; a wrong or missing key is the relay's
// OpenAI-shaped 401; usage rows name the user and a key id, not the key.
func TestAuthOverHTTP(t *testing.T) {
	e := newEnv(t, []string{"a1"}, nil)
	body := `{"model":"gpt-5","input":"hi"}`

	resp, b := e.post(body, "Authorization", "Bearer "+keyAlice)
	if resp.StatusCode != 200 {
		t.Fatalf("bearer: %d %s", resp.StatusCode, b)
	}
	aliceReq := resp.Header.Get("X-Relay-Request-Id")
	resp, b = e.post(body, "x-api-key", keyBob)
	if resp.StatusCode != 200 {
		t.Fatalf("x-api-key: %d %s", resp.StatusCode, b)
	}
	bobReq := resp.Header.Get("X-Relay-Request-Id")

	for _, h := range [][]string{
		{"Authorization", "Bearer rk-test-nobody"},
		{"x-api-key", "rk-test-nobody"},
		{"Authorization", "Basic " + keyAlice},
		{},
	} {
		resp, b := e.post(body, h...)
		var got struct {
			Error map[string]any `json:"error"`
		}
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("%v: body %s", h, b)
		}
		if resp.StatusCode != 401 || got.Error["type"] != "authentication_error" || got.Error["message"] != "Invalid API key" {
			t.Fatalf("%v: %d %s", h, resp.StatusCode, b)
		}
		if _, ok := got.Error["param"]; !ok {
			t.Fatalf("%v: error without param key: %s", h, b)
		}
	}
	if n := len(e.up.Requests()); n != 2 {
		t.Fatalf("upstream saw %d requests, want 2 (refused ones never go upstream)", n)
	}

	rows := e.rows()
	if len(rows) != 2 {
		t.Fatalf("usage rows = %d, want 2", len(rows))
	}
	if r := rows[aliceReq]; r.UserID != "alice" || r.APIKeyID != keyID(sha256.Sum256([]byte(keyAlice))) || r.GroupID != "default" {
		t.Fatalf("alice row = %+v", r)
	}
	if r := rows[bobReq]; r.UserID != "bob" || r.APIKeyID != keyID(sha256.Sum256([]byte(keyBob))) {
		t.Fatalf("bob row = %+v", r)
	}
}
