package mesh

import (
	"fmt"
	"os"
	"strconv"
	"strings"
	"testing"
)

// docTable returns the rows of the markdown table whose header line starts
// with head, each row split into trimmed cells.
func docTable(t *testing.T, doc, head string) [][]string {
	t.Helper()
	lines := strings.Split(doc, "\n")
	for i, l := range lines {
		if !strings.HasPrefix(l, head) {
			continue
		}
		var rows [][]string
		for _, r := range lines[i+2:] { // skip the |---| line
			if !strings.HasPrefix(r, "|") {
				break
			}
			cells := strings.Split(strings.Trim(r, "|"), "|")
			for j := range cells {
				cells[j] = strings.TrimSpace(cells[j])
			}
			rows = append(rows, cells)
		}
		return rows
	}
	t.Fatalf("docs/protocol.md has no table starting with %q", head)
	return nil
}

// withCommas formats n as 4,194,304.
func withCommas(n int) string {
	s := strconv.Itoa(n)
	for i := len(s) - 3; i > 0; i -= 3 {
		s = s[:i] + "," + s[i:]
	}
	return s
}

// TestProtocolDoc checks the kind and error-code tables of the spec, and
// the limits it states, against the code.
func TestProtocolDoc(t *testing.T) {
	raw, err := os.ReadFile("../../docs/protocol.md")
	if err != nil {
		t.Fatalf("reading the spec: %v", err)
	}
	doc := string(raw)

	kinds := docTable(t, doc, "| value | kind |")
	if len(kinds) != int(kindMax) {
		t.Errorf("the spec lists %d kinds, the code has %d", len(kinds), kindMax)
	}
	for i, row := range kinds {
		if want := fmt.Sprint(i + 1); row[0] != want {
			t.Errorf("kind row %d has value %s, want %s (in order, none missing)", i, row[0], want)
		}
		if got := Kind(i + 1).String(); row[1] != got {
			t.Errorf("kind %d is %s in the spec, %s in the code", i+1, row[1], got)
		}
	}

	codes := docTable(t, doc, "| code | name | meaning | retryable |")
	if len(codes) != int(codeMax) {
		t.Errorf("the spec lists %d error codes, the code has %d", len(codes), codeMax)
	}
	for i, row := range codes {
		c := Code(i + 1)
		if want := fmt.Sprint(i + 1); row[0] != want {
			t.Errorf("code row %d has value %s, want %s (in order, none missing)", i, row[0], want)
		}
		if row[1] != c.String() {
			t.Errorf("code %d is %s in the spec, %s in the code", i+1, row[1], c)
		}
		if want := map[bool]string{true: "yes", false: "no"}[c.Retryable()]; row[3] != want {
			t.Errorf("code %v: retryable %q in the spec, Retryable() = %v", c, row[3], c.Retryable())
		}
	}

	for _, want := range []string{
		withCommas(DefaultMaxFrameSize) + " bytes",
		withCommas(maxListLen) + " elements",
		fmt.Sprintf("smallest message (every str, bytes and list empty) is %d bytes", minMessageSize),
		fmt.Sprintf("(%d bytes for a subscription, %d for a header,\n%d for a message)", minSubSize, minHeaderSize, minMessageSize),
	} {
		if !strings.Contains(doc, want) {
			t.Errorf("the spec does not say %q", want)
		}
	}
}
