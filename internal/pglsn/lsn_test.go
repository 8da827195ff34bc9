package pglsn_test

import (
	"testing"

	"socnet/internal/pglsn"
)

func TestParseAndString(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want pglsn.LSN
	}{
		{"", 0},
		{"0/0", 0},
		{"0/3000148", 0x3000148},
		{"16/B374D848", 0x16_B374D848},
		{"FFFFFFFF/FFFFFFFF", pglsn.LSN(^uint64(0))},
	} {
		got, err := pglsn.Parse(tc.in)
		if err != nil || got != tc.want {
			t.Errorf("Parse(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
		if tc.in != "" && got.String() != tc.in {
			t.Errorf("Parse(%q).String() = %q", tc.in, got.String())
		}
	}
	for _, bad := range []string{"x", "1", "1/", "/1", "1/G", "100000000/0"} {
		if _, err := pglsn.Parse(bad); err == nil {
			t.Errorf("Parse(%q) accepted", bad)
		}
	}
	if d := pglsn.LSN(100).Minus(40); d != 60 {
		t.Errorf("Minus = %d, want 60", d)
	}
	if d := pglsn.LSN(40).Minus(100); d != 0 {
		t.Errorf("Minus past = %d, want 0", d)
	}
}
