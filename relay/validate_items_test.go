package relay

import "testing"

func TestScanItemKinds(t *testing.T) {
	for in, want := range map[string]itemKinds{
		`[{"type":"message","content":"function_call_output"}]`:                                  {},
		`[{"type":"function_call_output","call_id":"c"}]`:                                        {toolOutput: true},
		`[{"type" : "reasoning","encrypted_content":"x"}]`:                                       {reasoning: true},
		`[{"type":"compaction"},{"type":"compaction_trigger"}]`:                                  {compaction: true, trigger: true},
		`[{"type":"message","content":[{"type":"input_text","text":"\"type\":\"reasoning\""}]}]`: {},
		`[{"t\u0079pe":"reasoning"}]`:                                                            {}, // escaped spellings are not seen (a hint)
		`[{"type":`:                                                                              {},
	} {
		if got := scanItemKinds([]byte(in)); got != want {
			t.Errorf("scanItemKinds(%s) = %+v, want %+v", in, got, want)
		}
	}
}
