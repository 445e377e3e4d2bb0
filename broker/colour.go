package broker

import "fmt"

// HeaderColour carries a message's colour (docs/routing.md): a short name
// an app gives a message ("blue", "qa-run-17") so that operators' routing
// rules can send it to the instances whose labels match, for example a
// canary version. It is an app header under the sidecar's prefix, like
// HeaderTag: apps set it (the Go SDK from Message.Colour or the handler's
// context, HTTP apps with the Msgmesh-Colour request header), every broker
// carries it unchanged, and the sidecar only reads it. CheckColour says
// which values.
const HeaderColour = "Msgmesh-Colour"

// MaxColourLen is the longest colour, in bytes.
const MaxColourLen = 64

// CheckColour reports why c cannot be a message colour, or "": a colour is
// 1 to MaxColourLen bytes of ASCII letters, digits, '_', '.' and '-',
// starting with a letter or digit, so that it is the same on every broker,
// in a metric label and in a rule. Colours compare exactly (case
// included).
func CheckColour(c string) string {
	switch {
	case c == "":
		return "a colour is not empty; send no Msgmesh-Colour header for an uncoloured message"
	case len(c) > MaxColourLen:
		return fmt.Sprintf("a colour is at most %d bytes, not %d", MaxColourLen, len(c))
	}
	for i := 0; i < len(c); i++ {
		ch := c[i]
		alnum := ch >= 'a' && ch <= 'z' || ch >= 'A' && ch <= 'Z' || ch >= '0' && ch <= '9'
		if !alnum && (i == 0 || ch != '_' && ch != '.' && ch != '-') {
			return fmt.Sprintf("colour %q: only letters, digits, '_', '.' and '-' are allowed, and it must start with a letter or digit", c)
		}
	}
	return ""
}

// ColourOf returns the colour of m (its HeaderColour header), "" when it
// has none. Header names compare case-insensitively, as the header rule
// does.
func ColourOf(m *Message) string { return headerValue(m, HeaderColour) }
