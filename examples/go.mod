module github.com/relaykit/responsesrelay/examples

go 1.26.0

require github.com/relaykit/responsesrelay v0.0.0

replace github.com/relaykit/responsesrelay => ../
