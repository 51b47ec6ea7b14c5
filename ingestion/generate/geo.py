"""Moroccan geography for the generator: the 75 prefectures/provinces of the 2015 division
and about 1,500 communes, written as dbt seeds and read back by the generator.

``geo_provinces.csv``: province_code (region_code + 2 digits), province_name_fr, region_code.
``geo_communes.csv``: commune_code (province_code + 3 digits), commune_name_fr, province_code,
area_type (urban|rural). Province names and chef-lieu communes are real; the number of
communes per province follows the real order of magnitude; commune names beyond the few
real ones listed here are plausible generated names (prefix + stem, e.g. "Aït Brahim"),
since the seeds only need stable codes and readable labels.

``build_geo_seeds(seeds_dir)`` rewrites both seeds deterministically; the generator itself
only reads them (``load_geo``), so a user may replace them with an official list.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np

# (region_code, province name, is_prefecture, approximate number of communes, real commune names)
PROVINCES: list[tuple[str, str, bool, int, list[str]]] = [
    ("01", "Tanger-Assilah", True, 8, ["Tanger", "Assilah", "Gueznaia", "Al Manzla", "Sebt Azzinate"]),
    ("01", "M'diq-Fnideq", True, 5, ["M'diq", "Fnideq", "Martil", "Allyene", "Belyounech"]),
    ("01", "Tétouan", False, 23, ["Tétouan", "Oued Laou", "Azla", "Saddina", "Zaitoune"]),
    ("01", "Fahs-Anjra", False, 8, ["Ksar El Majaz", "Anjra", "Malloussa", "Ksar Sghir"]),
    ("01", "Larache", False, 19, ["Larache", "Ksar El Kébir", "Laouamra", "Ayacha", "Souaken"]),
    ("01", "Al Hoceïma", False, 36, ["Al Hoceïma", "Imzouren", "Bni Bouayach", "Targuist", "Ajdir"]),
    ("01", "Chefchaouen", False, 28, ["Chefchaouen", "Bab Taza", "Bab Berred", "Oued Laou Chaouen", "Derdara"]),
    ("01", "Ouezzane", False, 17, ["Ouezzane", "Mokrisset", "Zoumi", "Brikcha"]),
    ("02", "Oujda-Angad", True, 9, ["Oujda", "Bni Drar", "Naima", "Ahl Angad", "Isly"]),
    ("02", "Nador", False, 23, ["Nador", "Beni Ansar", "Zeghanghane", "Selouane", "Al Aroui"]),
    ("02", "Driouch", False, 23, ["Driouch", "Midar", "Ben Taieb", "Dar El Kebdani"]),
    ("02", "Jerada", False, 14, ["Jerada", "Ain Bni Mathar", "Touissit", "Laouinat"]),
    ("02", "Berkane", False, 16, ["Berkane", "Saïdia", "Ahfir", "Aklim", "Sidi Slimane Echcharraa"]),
    ("02", "Taourirt", False, 14, ["Taourirt", "El Aioun Sidi Mellouk", "Debdou"]),
    ("02", "Guercif", False, 10, ["Guercif", "Houara Oulad Raho", "Saka"]),
    ("02", "Figuig", False, 13, ["Figuig", "Bouarfa", "Tendrara", "Bni Tadjite"]),
    ("03", "Fès", True, 3, ["Fès", "Méchouar Fès Jdid", "Oulad Tayeb"]),
    ("03", "Meknès", True, 6, ["Meknès", "Toulal", "Ouislane", "Boufakrane", "Moulay Driss Zerhoun"]),
    ("03", "El Hajeb", False, 16, ["El Hajeb", "Ain Taoujdate", "Agourai", "Sabaa Aiyoun"]),
    ("03", "Ifrane", False, 10, ["Ifrane", "Azrou", "Timahdite", "Ain Leuh"]),
    ("03", "Moulay Yacoub", False, 8, ["Moulay Yacoub", "Ain Chkef", "Sebt Loudaya"]),
    ("03", "Sefrou", False, 22, ["Sefrou", "El Menzel", "Imouzzer Kandar", "Bhalil", "Ribat El Kheir"]),
    ("03", "Boulemane", False, 18, ["Boulemane", "Missour", "Outat El Haj", "Imouzzer Marmoucha"]),
    ("03", "Taounate", False, 49, ["Taounate", "Karia Ba Mohamed", "Tissa", "Ghafsai", "Thar Es-Souk"]),
    ("03", "Taza", False, 38, ["Taza", "Tahla", "Oued Amlil", "Aknoul", "Tainaste"]),
    ("04", "Rabat", True, 1, ["Rabat"]),
    ("04", "Salé", True, 4, ["Salé", "Sidi Bouknadel", "Shoul", "Ameur"]),
    ("04", "Skhirate-Témara", True, 7, ["Témara", "Skhirate", "Harhoura", "Ain Attig", "Ain El Aouda", "Sidi Yahya Zaer", "Mers El Kheir"]),
    ("04", "Kénitra", False, 25, ["Kénitra", "Mehdia", "Sidi Taibi", "Souk El Arbaa", "Mnasra"]),
    ("04", "Khémisset", False, 35, ["Khémisset", "Tiflet", "Rommani", "Maaziz", "Sidi Allal El Bahraoui"]),
    ("04", "Sidi Kacem", False, 27, ["Sidi Kacem", "Mechra Bel Ksiri", "Jorf El Melha", "Had Kourt"]),
    ("04", "Sidi Slimane", False, 10, ["Sidi Slimane", "Sidi Yahya El Gharb", "Dar Bel Amri"]),
    ("05", "Béni Mellal", False, 22, ["Béni Mellal", "Kasba Tadla", "El Ksiba", "Zaouiat Cheikh", "Aghbala"]),
    ("05", "Azilal", False, 44, ["Azilal", "Demnate", "Bzou", "Ouaouizeght", "Tabant"]),
    ("05", "Fquih Ben Salah", False, 20, ["Fquih Ben Salah", "Souk Sebt Oulad Nemma", "Oulad Ayad", "Dar Ould Zidouh"]),
    ("05", "Khénifra", False, 22, ["Khénifra", "M'rirt", "Aguelmous", "Kerrouchen"]),
    ("05", "Khouribga", False, 23, ["Khouribga", "Oued Zem", "Boujniba", "Hattane", "Bejaad"]),
    ("06", "Casablanca", True, 2, ["Casablanca", "Méchouar de Casablanca"]),
    ("06", "Mohammédia", True, 3, ["Mohammédia", "Ain Harrouda", "Sidi Moussa Ben Ali"]),
    ("06", "El Jadida", False, 29, ["El Jadida", "Azemmour", "Bir Jdid", "Moulay Abdallah", "Sidi Bennour Haouzia"]),
    ("06", "Nouaceur", False, 7, ["Nouaceur", "Dar Bouazza", "Bouskoura", "Oulad Azzouz", "Ouled Saleh"]),
    ("06", "Médiouna", False, 5, ["Médiouna", "Tit Mellil", "Lahraouyine", "Sidi Hajjaj Oued Hassar"]),
    ("06", "Benslimane", False, 15, ["Benslimane", "Bouznika", "El Mansouria", "Cherrat"]),
    ("06", "Berrechid", False, 19, ["Berrechid", "Had Soualem", "Deroua", "Sidi Rahal Chatai"]),
    ("06", "Settat", False, 56, ["Settat", "Ben Ahmed", "El Borouj", "Oulad Said", "Guisser"]),
    ("06", "Sidi Bennour", False, 24, ["Sidi Bennour", "Zemamra", "Oulad Amrane", "Laghnadra"]),
    ("07", "Marrakech", True, 18, ["Marrakech", "Tassoultante", "Saada", "Ouahat Sidi Brahim", "Loudaya"]),
    ("07", "Chichaoua", False, 35, ["Chichaoua", "Imintanoute", "Sidi Mokhtar", "Mjat"]),
    ("07", "Al Haouz", False, 40, ["Tahannaout", "Amizmiz", "Aït Ourir", "Asni", "Ijoukak", "Tameslouht"]),
    ("07", "El Kelâa des Sraghna", False, 42, ["El Kelâa des Sraghna", "Tamelelt", "Sidi Rahhal", "Laattaouia"]),
    ("07", "Essaouira", False, 57, ["Essaouira", "Tamanar", "Talmest", "Had Dra", "Smimou"]),
    ("07", "Rehamna", False, 25, ["Benguerir", "Sidi Bou Othmane", "Skhour Rehamna"]),
    ("07", "Safi", False, 29, ["Safi", "Jemâa Shaim", "Sebt Gzoula", "Had Hrara"]),
    ("07", "Youssoufia", False, 9, ["Youssoufia", "Chemaia", "Ighoud"]),
    ("08", "Errachidia", False, 29, ["Errachidia", "Erfoud", "Rissani", "Goulmima", "Tinejdad"]),
    ("08", "Ouarzazate", False, 17, ["Ouarzazate", "Tarmigt", "Skoura", "Taznakht", "Idelsane"]),
    ("08", "Midelt", False, 28, ["Midelt", "Rich", "Boumia", "Tounfite", "Zaida"]),
    ("08", "Tinghir", False, 25, ["Tinghir", "Boumalne Dadès", "Kalaat M'Gouna", "Alnif", "Tinzouline"]),
    ("08", "Zagora", False, 25, ["Zagora", "Agdz", "Tamegroute", "M'hamid El Ghizlane"]),
    ("09", "Agadir Ida-Outanane", True, 13, ["Agadir", "Aourir", "Drarga", "Tamri", "Taghazout"]),
    ("09", "Inezgane-Aït Melloul", True, 6, ["Inezgane", "Aït Melloul", "Dcheira El Jihadia", "Lqliaa", "Temsia"]),
    ("09", "Chtouka-Aït Baha", False, 22, ["Biougra", "Aït Baha", "Belfaa", "Sidi Bibi", "Massa"]),
    ("09", "Taroudant", False, 89, ["Taroudant", "Oulad Teima", "Aït Iaaza", "Taliouine", "Igherm"]),
    ("09", "Tiznit", False, 26, ["Tiznit", "Tafraout", "Aglou", "Anzi"]),
    ("09", "Tata", False, 20, ["Tata", "Akka", "Foum Zguid", "Fam El Hisn"]),
    ("10", "Guelmim", False, 18, ["Guelmim", "Bouizakarne", "Taghjijt", "Asrir"]),
    ("10", "Assa-Zag", False, 7, ["Assa", "Zag", "Al Mahbass"]),
    ("10", "Tan-Tan", False, 6, ["Tan-Tan", "El Ouatia", "Msied"]),
    ("10", "Sidi Ifni", False, 19, ["Sidi Ifni", "Lakhsas", "Mirleft", "Tighirt"]),
    ("11", "Laâyoune", False, 5, ["Laâyoune", "El Marsa", "Dcheira", "Boukraa", "Foum El Oued"]),
    ("11", "Boujdour", False, 3, ["Boujdour", "Jrifia", "Lamssid"]),
    ("11", "Tarfaya", False, 5, ["Tarfaya", "Akhfennir", "Tah", "Hagounia", "Daoura"]),
    ("11", "Es-Semara", False, 6, ["Es-Semara", "Haouza", "Jdiriya", "Sidi Ahmed Laaroussi", "Amgala", "Tifariti"]),
    ("12", "Oued Ed-Dahab", False, 8, ["Dakhla", "Bir Anzarane", "El Argoub", "Imlili", "Oum Dreyga", "Mijik", "Gleibat El Foula", "Aghouinite"]),
    ("12", "Aousserd", False, 5, ["Aousserd", "Bir Gandouz", "Lagouira", "Tichla", "Zoug"]),
]

# Share of the population by region (2024 census, rounded), used to weight households.
REGION_POPULATION_SHARE = {
    "01": 0.106, "02": 0.067, "03": 0.124, "04": 0.145, "05": 0.070, "06": 0.206,
    "07": 0.128, "08": 0.045, "09": 0.080, "10": 0.012, "11": 0.012, "12": 0.005,
}

_PREFIX = ["Aït", "Oulad", "Sidi", "Bni", "Ain", "Tizi", "Had", "Sebt", "Tnine", "Khemis",
           "Arbaa", "Jemâa", "Dar", "Ouled", "Imi n'", "Tala", "Bir", "Ras", "Lalla", "Ksar"]
_STEM = ["Brahim", "Hammou", "Ali", "Moussa", "Ahmed", "Youssef", "Bouzid", "Ayad", "Larbi",
         "Tamlalt", "Ouzguita", "Issafen", "Ouarg", "Tazrout", "Assif", "Amghar", "Boubker",
         "Zerhoun", "Frej", "Ghanem", "Hssaine", "Mimoun", "Tazenakht", "Oudaya", "Boukhalef",
         "Chaib", "Jilali", "Allal", "Slimane", "Bouchta", "Hajjaj", "Taieb", "Rahal", "Saïd",
         "Abdallah", "Idder", "Ouchen", "Taourirt", "Igli", "Anouar", "Tagant", "El Kheir",
         "Boumaiz", "Mellal", "Abbou", "Driss", "Belkacem", "Hamza", "Lahcen", "Omar"]
_SUFFIX = ["", "", "", "", " El Oued", " Centre", " El Jadid", " Ouled Ali", " Bni Hassan", " Lakdim"]


def _generated_names(rng: np.random.Generator, taken: set[str], n: int) -> list[str]:
    names = []
    while len(names) < n:
        name = f"{rng.choice(_PREFIX)} {rng.choice(_STEM)}{rng.choice(_SUFFIX)}".replace("n' ", "n'")
        if name not in taken:
            taken.add(name)
            names.append(name)
    return names


def build_geo_seeds(seeds_dir: Path) -> tuple[Path, Path]:
    """(Re)write geo_provinces.csv and geo_communes.csv deterministically."""
    rng = np.random.default_rng(20151)
    seeds_dir = Path(seeds_dir)
    prov_rows, comm_rows = [], []
    per_region: dict[str, int] = {}
    for region, name, is_prefecture, n_communes, real in PROVINCES:
        per_region[region] = per_region.get(region, 0) + 1
        pcode = f"{region}{per_region[region]:02d}"
        prov_rows.append((pcode, name, region))
        taken = set(real)
        names = list(real[:n_communes]) + _generated_names(rng, taken, max(0, n_communes - len(real)))
        for i, cname in enumerate(names, start=1):
            # Chef-lieu and prefecture communes are urban, a few other municipalities too.
            urban = is_prefecture or i == 1 or (i <= 3 and rng.random() < 0.45)
            comm_rows.append((f"{pcode}{i:03d}", cname, pcode, "urban" if urban else "rural"))
    prov_path, comm_path = seeds_dir / "geo_provinces.csv", seeds_dir / "geo_communes.csv"
    with open(prov_path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["province_code", "province_name_fr", "region_code"])
        w.writerows(prov_rows)
    with open(comm_path, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh, lineterminator="\n")
        w.writerow(["commune_code", "commune_name_fr", "province_code", "area_type"])
        w.writerows(comm_rows)
    return prov_path, comm_path


@dataclass(frozen=True)
class Geo:
    """Communes as parallel numpy arrays (index = commune index)."""

    region_codes: np.ndarray  # 12 region codes, '01'..'12'
    commune_code: np.ndarray  # object
    commune_name: np.ndarray  # object
    province_code: np.ndarray  # object, per commune
    region_code: np.ndarray  # object, per commune
    region_idx: np.ndarray  # int, per commune
    province_idx: np.ndarray  # int, per commune
    urban: np.ndarray  # bool, per commune
    weight: np.ndarray  # float, population weight per commune (sums to 1)
    province_codes: np.ndarray  # object, all provinces


def load_geo(seeds_dir: Path) -> Geo:
    seeds_dir = Path(seeds_dir)
    with open(seeds_dir / "geo_regions.csv", encoding="utf-8", newline="") as fh:
        regions = [r["region_code"] for r in csv.DictReader(fh)]
    with open(seeds_dir / "geo_provinces.csv", encoding="utf-8", newline="") as fh:
        provinces = list(csv.DictReader(fh))
    with open(seeds_dir / "geo_communes.csv", encoding="utf-8", newline="") as fh:
        communes = list(csv.DictReader(fh))
    prov_region = {p["province_code"]: p["region_code"] for p in provinces}
    prov_codes = [p["province_code"] for p in provinces]
    prov_index = {c: i for i, c in enumerate(prov_codes)}
    reg_index = {c: i for i, c in enumerate(regions)}
    code = np.array([c["commune_code"] for c in communes], dtype=object)
    pcode = np.array([c["province_code"] for c in communes], dtype=object)
    rcode = np.array([prov_region[p] for p in pcode], dtype=object)
    urban = np.array([c["area_type"] == "urban" for c in communes])
    ridx = np.array([reg_index[r] for r in rcode])
    # Weight: the region's population share, spread over its communes, urban communes x4.
    raw = np.where(urban, 4.0, 1.0)
    weight = np.zeros(len(code))
    for r, share in REGION_POPULATION_SHARE.items():
        if r not in reg_index:
            continue
        m = ridx == reg_index[r]
        if m.any():
            weight[m] = share * raw[m] / raw[m].sum()
    weight /= weight.sum()
    return Geo(
        region_codes=np.array(regions, dtype=object),
        commune_code=code,
        commune_name=np.array([c["commune_name_fr"] for c in communes], dtype=object),
        province_code=pcode,
        region_code=rcode,
        region_idx=ridx,
        province_idx=np.array([prov_index[p] for p in pcode]),
        urban=urban,
        weight=weight,
        province_codes=np.array(prov_codes, dtype=object),
    )
