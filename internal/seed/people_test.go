package seed_test

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/uuid"

	"socnet/internal/seed"
)

func TestGeneratorIsDeterministic(t *testing.T) {
	g1, err := seed.NewGenerator(42)
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := seed.NewGenerator(42)
	other, _ := seed.NewGenerator(43)
	differ := 0
	// Out of order on purpose: a person depends on (seed, index) only.
	for _, i := range []int{5, 0, 999_999, 17, 5, 123_456} {
		p1, p2, p3 := g1.Person(i), g2.Person(i), other.Person(i)
		if diff := cmp.Diff(p1, p2); diff != "" {
			t.Errorf("person %d differs between generators of one seed (-first +second):\n%s", i, diff)
		}
		if p1.ID != seed.UserID(42, i) {
			t.Errorf("person %d has id %s, want UserID %s", i, p1.ID, seed.UserID(42, i))
		}
		if p3.ID == p1.ID {
			t.Errorf("seeds 42 and 43 give person %d the same id", i)
		}
		if p1.FirstName != p3.FirstName || p1.SecondName != p3.SecondName {
			differ++
		}
	}
	if differ == 0 {
		t.Error("seeds 42 and 43 give the same names")
	}
}

func TestUserIDs(t *testing.T) {
	prev := ""
	for i := range 5000 {
		s := seed.UserID(7, i)
		id, err := uuid.Parse(s)
		if err != nil || id.Version() != 7 || id.Variant() != uuid.RFC4122 {
			t.Fatalf("UserID(7, %d) = %s: not a UUIDv7 (%v)", i, s, err)
		}
		if s <= prev {
			t.Fatalf("UserID(7, %d) = %s is not after %s", i, s, prev)
		}
		prev = s
	}
	sec, nsec := uuid.MustParse(seed.UserID(7, 0)).Time().UnixTime()
	if got := time.Unix(sec, nsec).UTC(); got.Year() != 2020 {
		t.Errorf("UserID timestamp %v, want early 2020", got)
	}
}

func TestPeopleLookReal(t *testing.T) {
	g, err := seed.NewGenerator(1)
	if err != nil {
		t.Fatal(err)
	}
	const n = 20_000
	firsts, seconds, cities := map[string]int{}, map[string]int{}, map[string]int{}
	var konst, osi, women int
	for i := range n {
		p := g.Person(i)
		firsts[p.FirstName]++
		seconds[p.SecondName]++
		cities[p.City]++
		if strings.HasPrefix(p.FirstName, "Конст") {
			konst++
		}
		if strings.HasPrefix(p.SecondName, "Оси") {
			osi++
		}
		if strings.HasSuffix(p.SecondName, "ова") || strings.HasSuffix(p.SecondName, "ева") || strings.HasSuffix(p.SecondName, "ина") {
			women++
		}
		if y := p.Birthdate.Year(); y < 1950 || y > 2008 || p.Birthdate.Location() != time.UTC || p.Birthdate.Hour() != 0 {
			t.Fatalf("person %d birthdate %v", i, p.Birthdate)
		}
		if p.Biography == "" || len([]rune(p.Biography)) > 300 || p.City == "" {
			t.Fatalf("person %d: biography %q city %q", i, p.Biography, p.City)
		}
	}
	if konst == 0 || osi == 0 {
		t.Errorf("no one found by Конст (%d) or Оси (%d)", konst, osi)
	}
	if len(firsts) < 150 || len(seconds) < 600 {
		t.Errorf("%d first names and %d surnames in %d people: too few", len(firsts), len(seconds), n)
	}
	// The skew is real: the most common names are far more common than rare ones.
	if firsts["Александр"] < 10*max(firsts["Осип"], 1) || seconds["Иванов"] < 10*max(seconds["Ястребов"], 1) {
		t.Errorf("no frequency skew: Александр %d Осип %d Иванов %d Ястребов %d",
			firsts["Александр"], firsts["Осип"], seconds["Иванов"], seconds["Ястребов"])
	}
	if cities["Москва"] < 5*cities["Тула"] || cities["Тула"] == 0 {
		t.Errorf("no population weighting: Москва %d Тула %d", cities["Москва"], cities["Тула"])
	}
	if women < n/3 || women > 2*n/3 {
		t.Errorf("%d of %d surnames are feminine", women, n)
	}
	// A woman's surname agrees with her name.
	for i := range 2000 {
		p := g.Person(i)
		if seconds[p.SecondName+"а"] > 0 && strings.HasSuffix(p.FirstName, "а") && p.FirstName != "Никита" &&
			p.FirstName != "Илья" && p.FirstName != "Савва" && p.FirstName != "Лука" && p.FirstName != "Кузьма" {
			t.Fatalf("person %d: %s %s: a woman with a masculine surname", i, p.FirstName, p.SecondName)
		}
	}
}
