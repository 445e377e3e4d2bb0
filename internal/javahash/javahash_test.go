package javahash

import "testing"

// The expected values are what Java prints for "...".hashCode() (and the
// queue index SelectMessageQueueByHash picks), worked out from the
// definition in the JDK's String.hashCode documentation; they include
// overflow, negative hashes, a character outside the BMP (two UTF-16
// units) and invalid UTF-8.
func TestString(t *testing.T) {
	for _, c := range []struct {
		s    string
		want int32
	}{
		{"", 0},
		{"a", 97},
		{"abc", 96354},
		{"hello", 99162322},
		{"order-1", -1207111310},
		{"polygenelubricants", -2147483648}, // the classic Integer.MIN_VALUE string
		{"Aa", 2112},
		{"BB", 2112},
		{"é", 233},
		{"日本", 26085*31 + 26412},
		{"😀", 55357*31 + 56832},
		{"\xff", 0xFFFD},
	} {
		if got := String(c.s); got != c.want {
			t.Errorf("String(%q) = %d, want %d", c.s, got, c.want)
		}
	}
}

func TestIndex(t *testing.T) {
	for _, c := range []struct {
		h    int32
		n    int
		want int
	}{
		{96354, 8, 2},
		{-2147483648, 8, 0},
		{-7, 4, 3},
		{7, 4, 3},
		{0, 1, 0},
	} {
		if got := Index(c.h, c.n); got != c.want {
			t.Errorf("Index(%d, %d) = %d, want %d", c.h, c.n, got, c.want)
		}
	}
}
