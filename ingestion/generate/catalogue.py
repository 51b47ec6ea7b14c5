"""The programme catalogue: 13 programmes over the five action lines of the agreement."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass


@dataclass(frozen=True)
class Programme:
    code: str
    name_fr: str
    name_ar: str
    action_line: str
    start: dt.date
    end: dt.date | None
    budget_mad: float
    eligibility_score_max: float | None
    unit_cost_mad: float | None


PROGRAMMES: tuple[Programme, ...] = (
    Programme("ASD-01", "Aide sociale directe – allocations familiales", "الدعم الاجتماعي المباشر – إعانات الحماية من المخاطر المرتبطة بالطفولة",
              "social_programmes", dt.date(2023, 12, 1), None, 25_000_000_000, 50.0, 200.0),
    Programme("ASD-02", "Aide sociale directe – aide forfaitaire aux ménages", "الدعم الاجتماعي المباشر – الإعانة الجزافية",
              "social_programmes", dt.date(2023, 12, 1), None, 8_000_000_000, 50.0, 500.0),
    Programme("TAY-01", "Tayssir – transferts conditionnels pour la scolarisation", "تيسير – التحويلات المالية المشروطة للتمدرس",
              "social_programmes", dt.date(2008, 9, 1), None, 2_500_000_000, 45.0, 70.0),
    Programme("DAM-01", "Appui direct aux femmes veuves en situation de précarité", "الدعم المباشر للنساء الأرامل في وضعية هشة",
              "social_programmes", dt.date(2015, 1, 1), None, 900_000_000, 45.0, 350.0),
    Programme("HAN-01", "Appui aux personnes en situation de handicap (aides techniques)", "دعم الأشخاص في وضعية إعاقة (المساعدات التقنية)",
              "social_programmes", dt.date(2016, 1, 1), None, 450_000_000, 60.0, 3_500.0),
    Programme("INC-01", "Incubateur social – coopératives et activités génératrices de revenus", "الحاضنة الاجتماعية – التعاونيات والأنشطة المدرة للدخل",
              "social_incubation", dt.date(2022, 1, 1), dt.date(2027, 12, 31), 600_000_000, 70.0, 45_000.0),
    Programme("INC-02", "Programme d'appui aux coopératives féminines", "برنامج دعم التعاونيات النسائية",
              "social_incubation", dt.date(2022, 7, 1), dt.date(2026, 12, 31), 250_000_000, 70.0, 30_000.0),
    Programme("MCF-01", "Microcrédit solidaire et activités génératrices de revenus", "القروض الصغرى التضامنية والأنشطة المدرة للدخل",
              "inclusive_finance", dt.date(2021, 1, 1), None, 3_000_000_000, 75.0, None),
    Programme("MCF-02", "Crédit inclusif rural – garantie et habitat", "القرض الإدماجي القروي – الضمان والسكن",
              "inclusive_finance", dt.date(2022, 1, 1), None, 1_500_000_000, 75.0, None),
    Programme("DIG-01", "Portail national des e-services sociaux", "البوابة الوطنية للخدمات الاجتماعية الإلكترونية",
              "digital_services", dt.date(2022, 6, 1), None, 180_000_000, None, None),
    Programme("DIG-02", "Application mobile et guichets de proximité numériques", "التطبيق المحمول وشبابيك القرب الرقمية",
              "digital_services", dt.date(2023, 3, 1), None, 120_000_000, None, None),
    Programme("EPS-01", "Modernisation des établissements de protection sociale", "تأهيل مؤسسات الرعاية الاجتماعية",
              "eps_modernisation", dt.date(2022, 1, 1), dt.date(2026, 12, 31), 1_200_000_000, None, None),
    Programme("EPS-02", "Mise à niveau des centres pour personnes âgées", "تأهيل مراكز الأشخاص المسنين",
              "eps_modernisation", dt.date(2023, 1, 1), dt.date(2026, 12, 31), 400_000_000, None, None),
)

BY_CODE = {p.code: p for p in PROGRAMMES}
CASH_PROGRAMMES = ("ASD-01", "ASD-02", "TAY-01", "DAM-01")  # paid monthly
ENROLMENT_PROGRAMMES = CASH_PROGRAMMES + ("HAN-01",)
