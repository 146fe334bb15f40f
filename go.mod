module github.com/relaykit/responsesrelay

go 1.26.0

require (
	github.com/coder/websocket v1.8.15
	github.com/tidwall/gjson v1.20.2
	github.com/tidwall/sjson v1.2.9
	golang.org/x/sync v0.24.0
)

require (
	github.com/tidwall/match v1.1.1 // indirect
	github.com/tidwall/pretty v1.3.0 // indirect
)
