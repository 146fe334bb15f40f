package conversation_test

import (
	"testing"

	"github.com/relaykit/responsesrelay/internal/leakcheck"
)

func TestMain(m *testing.M) { leakcheck.Main(m) }
