"""Moroccan first and family names, in Latin script (French transliteration) and Arabic."""

from __future__ import annotations

import numpy as np

MALE = [
    ("Mohamed", "محمد"), ("Ahmed", "أحمد"), ("Youssef", "يوسف"), ("Abdelkader", "عبد القادر"),
    ("Mustapha", "مصطفى"), ("Hassan", "حسن"), ("Hussein", "حسين"), ("Omar", "عمر"),
    ("Said", "سعيد"), ("Brahim", "إبراهيم"), ("Rachid", "رشيد"), ("Khalid", "خالد"),
    ("Abdelaziz", "عبد العزيز"), ("Abdellah", "عبد الله"), ("Driss", "إدريس"), ("Lahcen", "لحسن"),
    ("Mbarek", "مبارك"), ("Hamid", "حميد"), ("Noureddine", "نور الدين"), ("Karim", "كريم"),
    ("Anass", "أنس"), ("Ayoub", "أيوب"), ("Amine", "أمين"), ("Hamza", "حمزة"),
    ("Othmane", "عثمان"), ("Bilal", "بلال"), ("Zakaria", "زكرياء"), ("Ismail", "إسماعيل"),
    ("Soufiane", "سفيان"), ("Adil", "عادل"), ("Jamal", "جمال"), ("Aziz", "عزيز"),
    ("Abderrahim", "عبد الرحيم"), ("Abdelilah", "عبد الإله"), ("Mehdi", "مهدي"), ("Yassine", "ياسين"),
    ("Hicham", "هشام"), ("Tarik", "طارق"), ("Mouad", "معاد"), ("Ilyas", "إلياس"),
    ("Issam", "عصام"), ("Jaouad", "جواد"), ("Larbi", "العربي"), ("Miloud", "ميلود"),
    ("Boujemâa", "بوجمعة"), ("Mimoun", "ميمون"), ("Lhoussaine", "لحسين"), ("Aïssa", "عيسى"),
    ("Réda", "رضا"), ("Saâd", "سعد"),
]
FEMALE = [
    ("Fatima", "فاطمة"), ("Khadija", "خديجة"), ("Aïcha", "عائشة"), ("Malika", "مليكة"),
    ("Naima", "نعيمة"), ("Rachida", "رشيدة"), ("Zahra", "زهرة"), ("Fatima-Zahra", "فاطمة الزهراء"),
    ("Hafida", "حفيظة"), ("Saadia", "سعدية"), ("Latifa", "لطيفة"), ("Karima", "كريمة"),
    ("Nadia", "نادية"), ("Samira", "سميرة"), ("Souad", "سعاد"), ("Hakima", "حكيمة"),
    ("Meriem", "مريم"), ("Zineb", "زينب"), ("Hajar", "هاجر"), ("Salma", "سلمى"),
    ("Imane", "إيمان"), ("Siham", "سهام"), ("Loubna", "لبنى"), ("Sanae", "سناء"),
    ("Asmae", "أسماء"), ("Houda", "هدى"), ("Kaoutar", "كوثر"), ("Chaimae", "شيماء"),
    ("Oumaima", "أميمة"), ("Hiba", "هبة"), ("Yasmine", "ياسمين"), ("Rania", "رانية"),
    ("Ghizlane", "غزلان"), ("Btissam", "ابتسام"), ("Mina", "مينة"), ("Itto", "إطو"),
    ("Yamna", "يامنة"), ("Rkia", "رقية"), ("Fadma", "فاضمة"), ("Touria", "ثريا"),
    ("Mounia", "منية"), ("Wafae", "وفاء"), ("Ilham", "إلهام"), ("Nawal", "نوال"),
    ("Hanane", "حنان"), ("Hasna", "حسناء"), ("Maryam", "مريم"), ("Inès", "إيناس"),
    ("Chaïma", "شيماء"), ("Safâa", "صفاء"),
]
FAMILY = [
    ("Alaoui", "العلوي"), ("Idrissi", "الإدريسي"), ("Benali", "بنعلي"), ("Bennani", "بناني"),
    ("Tazi", "التازي"), ("Fassi", "الفاسي"), ("Berrada", "برادة"), ("Chraibi", "الشرايبي"),
    ("El Amrani", "العمراني"), ("El Idrissi", "الإدريسي"), ("Ouazzani", "الوزاني"), ("Benjelloun", "بنجلون"),
    ("Lahlou", "لحلو"), ("Bouzid", "بوزيد"), ("Amrani", "عمراني"), ("Ait Ali", "آيت علي"),
    ("Ait Brahim", "آيت إبراهيم"), ("Ait Ouahmane", "آيت وحمان"), ("Oukhouya", "أوخويا"),
    ("Elbaz", "الباز"), ("Ziani", "الزياني"), ("Kabbaj", "القباج"), ("Sqalli", "الصقلي"),
    ("Zerouali", "الزروالي"), ("Benkirane", "بنكيران"), ("Mansouri", "المنصوري"), ("Hammoudi", "حمودي"),
    ("Jabri", "الجابري"), ("Naciri", "الناصري"), ("Rifai", "الرفاعي"), ("Sebti", "السبتي"),
    ("Tahiri", "الطاهري"), ("Yacoubi", "اليعقوبي"), ("Zouhair", "زهير"), ("Bakkali", "البقالي"),
    ("Chaoui", "الشاوي"), ("Daoudi", "الداودي"), ("Essaidi", "السعيدي"), ("Filali", "الفيلالي"),
    ("Ghazi", "الغازي"), ("Hilali", "الهلالي"), ("Jamali", "الجمالي"), ("Kettani", "الكتاني"),
    ("Lamrani", "اللمراني"), ("Mernissi", "المرنيسي"), ("Naji", "ناجي"), ("Ouardi", "الوردي"),
    ("Qadiri", "القادري"), ("Rahmouni", "الرحموني"), ("Slaoui", "السلاوي"), ("Touimi", "التويمي"),
    ("Zemmouri", "الزموري"), ("Boukhris", "بوخريص"), ("El Fadili", "الفاضلي"), ("Belhaj", "بلحاج"),
    ("Chafik", "شفيق"), ("Derkaoui", "الدرقاوي"), ("El Ouali", "الوالي"), ("Guennoun", "كنون"),
    ("Haddou", "حدو"), ("Ihrai", "إحراي"), ("Kadiri", "القادري"), ("Lakhdar", "الأخضر"),
    ("Moutaouakil", "المتوكل"), ("Nejjar", "النجار"), ("Ouchen", "أوشن"), ("Raji", "الراجي"),
    ("Skalli", "السقلي"), ("Tounsi", "التونسي"), ("Azzouzi", "العزوزي"), ("Belkadi", "بلقاضي"),
    ("Benmoussa", "بنموسى"), ("El Hajjami", "الحجامي"), ("Moumen", "مومن"), ("Ouhammou", "أوحمو"),
    ("Amzil", "أمزيل"), ("Boutaleb", "بوطالب"), ("Charkaoui", "الشرقاوي"), ("Doukkali", "الدكالي"),
    ("El Khattabi", "الخطابي"), ("Fikri", "فكري"), ("Gharbaoui", "الغرباوي"), ("Hakimi", "حكيمي"),
    ("Rguibi", "الركيبي"), ("Soussi", "السوسي"), ("Zemrani", "الزمراني"), ("Ben Saïd", "بن سعيد"),
    ("Lâabi", "اللعبي"), ("Ouled Hadj", "ولد الحاج"),
]

FIRST_FR = {0: np.array([n for n, _ in FEMALE], dtype=object), 1: np.array([n for n, _ in MALE], dtype=object)}
FIRST_AR = {0: np.array([a for _, a in FEMALE], dtype=object), 1: np.array([a for _, a in MALE], dtype=object)}
LAST_FR = np.array([n for n, _ in FAMILY], dtype=object)
LAST_AR = np.array([a for _, a in FAMILY], dtype=object)
